"""``python -m paper_trader``: see :mod:`paper_trader.cli`."""

from paper_trader.cli import app

if __name__ == "__main__":
    app(prog_name="python -m paper_trader")
