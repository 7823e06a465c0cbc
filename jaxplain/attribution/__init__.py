"""Attribution methods, one file per family."""
