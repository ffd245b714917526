"""`python -m lm1b.loader_bench`: runs lm1b.commands.loader_bench."""

from lm1b.commands.loader_bench import main

if __name__ == "__main__":
    main()
