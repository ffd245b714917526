"""`python -m lm1b.plan`: runs lm1b.commands.plan."""

from lm1b.commands.plan import main

if __name__ == "__main__":
    main()
