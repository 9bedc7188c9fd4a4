"""`python -m qwen3tts ...` (see qwen3tts/cli.py)."""

import sys

from .cli import main

sys.exit(main())
