"""`python -m lm1b.bench`: runs lm1b.commands.bench."""

from lm1b.commands.bench import main

if __name__ == "__main__":
    main()
