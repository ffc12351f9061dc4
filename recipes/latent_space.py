"""Map a model's latent space to 2-D (PCA and t-SNE) coloured by a property and by crystal system.

    equiprop embed --checkpoint runs/quickstart/best.ckpt --input bundled:default --output emb.npz
    python recipes/latent_space.py emb.npz --color Ef --out latent_space.png
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("embeddings", help=".npz written by `equiprop embed`")
    parser.add_argument("--color", default="Ef", help="a scalar task stored in the file (label_<task>)")
    parser.add_argument("--out", default="latent_space.png")
    parser.add_argument("--max-points", type=int, default=3000, help="t-SNE on a seeded sample of this size")
    args = parser.parse_args()
    data = np.load(args.embeddings)
    x = StandardScaler().fit_transform(data["embeddings"])
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(x), size=min(len(x), args.max_points), replace=False))
    x, systems = x[pick], data["crystal_systems"][pick]
    values = data[f"label_{args.color}"][pick] if f"label_{args.color}" in data else np.full(len(x), np.nan)
    units = str(data[f"units_{args.color}"]) if f"units_{args.color}" in data else ""
    pca = PCA(n_components=2, random_state=0).fit(x)
    maps = {"PCA": pca.transform(x), "t-SNE": TSNE(n_components=2, random_state=0, init="pca").fit_transform(x)}
    fig, axes = plt.subplots(2, 2, figsize=(12, 10))
    names = sorted(set(systems))
    for row, (title, xy) in enumerate(maps.items()):
        labelled = np.isfinite(values)
        axes[row, 0].scatter(*xy[~labelled].T, s=3, c="lightgrey", label="no label")
        sc = axes[row, 0].scatter(*xy[labelled].T, s=4, c=values[labelled], cmap="viridis")
        fig.colorbar(sc, ax=axes[row, 0], label=f"{args.color} [{units}]")
        axes[row, 0].set_title(f"{title} coloured by {args.color}")
        for name in names:
            axes[row, 1].scatter(*xy[systems == name].T, s=4, label=name)
        axes[row, 1].set_title(f"{title} coloured by crystal system")
        axes[row, 1].legend(markerscale=3, fontsize=8)
    fig.suptitle(f"{len(x)} structures; PCA explains {pca.explained_variance_ratio_.sum():.0%} of the variance")
    fig.savefig(args.out, dpi=100, bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
