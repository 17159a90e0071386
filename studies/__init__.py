"""The example specs, shipped as package data (``rnntune.studies``): ``rnntune serve --demo``
submits ``sine-lstm.yaml`` from here, in a checkout and in an installed wheel alike."""
