"""``python -m rest_consumer`` runs the command line."""

from rest_consumer.cli import main

if __name__ == "__main__":
    main()
