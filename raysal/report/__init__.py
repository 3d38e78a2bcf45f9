"""What a person sees: console lines and the log capture (``console``), progress of long work
(``progress``), accuracy figures (``metrics``), plots (``plots``) and a simulation's table and
files (``simulation_report``)."""
