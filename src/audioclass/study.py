"""Published figures our results are shown beside (``../shared/docs/reference-study.md``).

The study's figures are test accuracy on its 1,600 augmented test files, from
a random split whose test set also chose its epochs and ensemble weights; the
dataset paper's are ESC-10's official 5-fold cross-validation. Neither is the
same protocol as ours, so they are context, not a like-for-like score.
"""

from __future__ import annotations

# Classical models on the 1D raw vectors, by the classical stage's default model names.
RAW_1D = {
    "nearest_centroid": 11.9,
    "knn_3": 12.1,
    "knn_7": 10.5,
    "gaussian_nb": 28.1,
    "random_forest_5": 22.6,
    "random_forest_50": 30.8,
    "random_forest_500": 32.8,
    "random_forest_1000": 34.4,
    "linear_svm_c001": 16.5,
    "linear_svm_c01": 17.5,
    "linear_svm_c1": 13.4,
    "linear_svm_c10": 10.2,
    "mlp_512_128_lbfgs": 19.1,
}

# The 1D CNN family: only its best cell was published.
CNN1D = {"deep1-k7": 50.5}

# The 2D CNN, mean ± SE of six runs, by first kernel size.
CNN2D_RUNS = "75.54 ± 0.92 % (3×3) / 76.18 ± 0.85 % (7×7)"
CNN2D_SINGLE_RUNS = (76.7, 76.4, 78.9, 78.0, 75.9, 72.2)

# Ensembles of the six runs, by the ensemble stage's method names; the study weighted
# by each model's test accuracy where we weight by validation accuracy, and fitted Jaya's weights on test.
ENSEMBLES = {"average": 78.88, "maximum": 78.81, "vote": 78.50, "val_weighted": 79.1, "swarm_jaya": 81.06}

# The ESC-10 dataset paper's baselines on MFCC + zero-crossing-rate features, by scikit-learn estimator.
DATASET_PAPER = {
    "SVC": ("SVM, MFCC + ZCR", 67.5),
    "RandomForestClassifier": ("random forest, MFCC + ZCR", 72.7),
    "KNeighborsClassifier": ("k-NN, MFCC + ZCR", 66.7),
}
