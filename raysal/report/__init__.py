"""What a person sees: console lines and the log capture (``console``), progress of long work
(``progress``), accuracy figures (``metrics``) and plots (``plots``)."""
