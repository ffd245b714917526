"""BIGLSTM, F-LSTM and G-LSTM language models on the One Billion Word benchmark."""

__version__ = "0.1.0"
