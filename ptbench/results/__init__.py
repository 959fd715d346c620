"""What happens to runs once they exist: the SQLite store, matching stored runs to SPECs,
statistics, plots, and the rendered leaderboards and suite reports."""
