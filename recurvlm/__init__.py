"""recurvlm: recurrent top-down vision-language models versus their feedforward baselines."""

__version__ = "0.1.0"
