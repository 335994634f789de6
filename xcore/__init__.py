"""xcore: explain image, video and skeleton classifiers over whole datasets and measure the explanations.

The library is pure torch / numpy / pyarrow / scikit-image. It never imports Ray or Prefect: the runtime
that fans shards out to actors lives in the top-level ``tasks`` and ``flows`` packages.
"""

__version__ = "0.1.0"
