"""`python -m mlx_attn`: the doctor and benchmark (see mlx_attn/doctor)."""
import sys

from .doctor import main

sys.exit(main())
