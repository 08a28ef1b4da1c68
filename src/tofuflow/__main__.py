"""`python -m tofuflow`: the `tofuflow` command, where its console script is not on PATH."""

from tofuflow.cli import main

if __name__ == "__main__":
    main()
