"""``attnact reproduce tiny-sweep ARGS`` in a fresh process: the interruption test starts this
script, kills it mid-sweep and starts it again. (A script, not ``python -c``: spawned workers
re-import the main module, and the guard below keeps them from starting sweeps of their own.)"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # sweep_helpers, for the workers too
    import sweep_helpers

    from attnact.cli import main
    from attnact.experiments import register_experiment

    register_experiment(sweep_helpers.TinyExperiment())
    sys.exit(main(["reproduce", "tiny-sweep", *sys.argv[1:]]))
