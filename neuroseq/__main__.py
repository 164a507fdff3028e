"""Run the `neuroseq` command as `python -m neuroseq`."""
import sys

from neuroseq.cli import main

sys.exit(main())
