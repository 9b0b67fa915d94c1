"""The plugins that ship with steth-hub.

They are registered through the ``steth_hub`` entry-point group in steth-hub's own
``pyproject.toml``, exactly like a contributor's plugin, one entry point per module:

* ``steth_builtin.preprocessors``  - the paper's preprocessing steps
* ``steth_builtin.features``       - multi-window log-mel and the AST front end
* ``steth_builtin.classifiers``    - AST, DenseNet201, MFCC + logistic regression
* ``steth_builtin.explainers``     - attention maps and Grad-CAM

These modules only register specs; the code they point to is imported when used.
"""
