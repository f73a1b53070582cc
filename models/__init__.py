"""Model architectures and the recipes that know them (one file per recipe in `models.recipes`)."""
