"""The registered ensemble's model code: MLflow runs this file to load it (models-from-code).

So the logged model holds this file, the package's source and the bundle's
weights and params, and no pickled Python object: loading it runs only code
anyone can read. The class is :class:`audioclass.bundle.EnsemblePyfunc`.
"""

from mlflow.models import set_model

from audioclass.bundle import EnsemblePyfunc

set_model(EnsemblePyfunc())
