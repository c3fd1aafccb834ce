"""Makes sklearn-pca.npz, the fixture of Tests/NormKitTests/WhiteningTests.swift.

Run once with scikit-learn and NumPy installed (python3 make_sklearn_fixture.py);
the output is committed, so the tests need neither.

A (200, 6) float64 data set with correlated features and offsets, and what
scikit-learn's PCA(n_components=3, whiten=True) makes of it: the mean, the
components (rows; scikit-learn signs each so that its entry of largest
magnitude is positive), the explained variances (the eigenvalues of the
covariance with N - 1), and the transform of the data and of a second batch.
"""
import numpy as np
import sklearn
from sklearn.decomposition import PCA

rng = np.random.default_rng(7)
mixing = rng.normal(size=(6, 6)) * np.array([3.0, 2.0, 1.5, 1.0, 0.5, 0.25])
data = rng.normal(size=(200, 6)) @ mixing + np.array([10000.1, -3.3, 0.7, 12.0, 5.5, -0.9])
batch = rng.normal(size=(17, 6)) @ mixing + np.array([10000.1, -3.3, 0.7, 12.0, 5.5, -0.9])
pca = PCA(n_components=3, whiten=True, svd_solver="full").fit(data)
largest = np.abs(pca.components_).argmax(axis=1)
assert (pca.components_[np.arange(3), largest] > 0).all(), "sign rule differs"
arrays = dict(data=data, batch=batch, mean=pca.mean_, components=pca.components_,
              explained_variance=pca.explained_variance_, transformed=pca.transform(data),
              batch_transformed=pca.transform(batch))
# C order: NormKit reads no Fortran-order arrays, and transposes come out in it.
np.savez("sklearn-pca.npz", **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
print("scikit-learn", sklearn.__version__, pca.explained_variance_)
