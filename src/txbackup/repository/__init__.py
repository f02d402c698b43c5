"""What is stored in a repository (layout, config, codec), on top of ``storage`` (where)."""
