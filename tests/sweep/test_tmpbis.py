import sys, traceback
from sweep_helpers import write_sweep
from lmjax.sweep.launch import LaunchOptions, launch

def test_h(tmp_path, capsys):
    from lmjax.cli import main
    cls = type(sys.stdout)
    orig = cls.close
    def close(self):
        traceback.print_stack(file=sys.__stderr__)
        return orig(self)
    cls.close = close
    try:
        path = write_sweep(tmp_path, name="sl", unique=(0, 40_000, 60_000))
        d = str(tmp_path / "sweep")
        argv = ["sweep", "launch", path, "--dir", d, "--backend", "slurm", "--dry-run"]
        assert main(argv) == 0
    finally:
        cls.close = orig
