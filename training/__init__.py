"""The offline side: simulation, training, evaluation, backtests, replays, exports, the CLI."""
