"""The journal: what zdmproxy remembers in the target database (schema ``zdmproxy``)."""
