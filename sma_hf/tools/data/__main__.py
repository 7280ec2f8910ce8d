"""`python -m sma_hf.tools.data`: the same as `sma-prepare-data`."""

from .prepare import main


main()
