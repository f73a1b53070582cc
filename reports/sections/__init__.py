"""The sections of the HTML report, one module each, every one built from the typed results."""
