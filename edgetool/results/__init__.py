"""Result store, statistics and views of finished runs."""
