"""aircall-sync: log Aircall calls into Salesforce and Front."""

__version__ = "0.1.0"
