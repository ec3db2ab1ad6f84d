"""Reporting: the HTML page every training job writes (`report`, its template in
`templates/`), and its plots (`figures`)."""
