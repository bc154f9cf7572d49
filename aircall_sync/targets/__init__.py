"""Targets: each turns assessed calls plus CRM lookups into the records it writes."""
