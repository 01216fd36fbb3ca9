"""The data lake: atomic writes (`atomic`) and the stored formats of asset values (`values`)."""
