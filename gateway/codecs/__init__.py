"""Client wire formats: each decodes requests into the canonical model and encodes events out."""
