"""`python -m lm1b.demo`: runs lm1b.commands.demo."""

from lm1b.commands.demo import main

if __name__ == "__main__":
    main()
