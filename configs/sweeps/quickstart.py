"""The quickstart scaling study (see lmjax/sweep/quickstart_grid.py for the grid).

    lmjax sweep launch configs/sweeps/quickstart.py --dir runs/quickstart --backend local
    lmjax sweep status runs/quickstart
    lmjax sweep collect runs/quickstart
"""

from lmjax.sweep.quickstart_grid import get_sweep  # noqa: F401
