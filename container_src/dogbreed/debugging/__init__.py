"""Debugging: the hook that saves tensors during training (`hook`, configured by
`config`), the smdebug trace they are written in (`trace`), and the built-in rules that
read them (`rules`; their names and parameters are in `dogbreed.rule_specs`)."""
