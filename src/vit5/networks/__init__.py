"""Networks built from vit5 modules."""
