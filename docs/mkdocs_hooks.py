"""mkdocs hook: one page per method, made at build time from the plugin's README.

Each plugin's ``plugins/<x>/README.md`` (options, choices, measured results, maintained with the
plugin's code) becomes ``methods/<x>.md`` under a header naming the paper and the plugin.
Relative links of a README point into the repository, not into the site, so they are shown as
repository paths; headings move one level down under the page title.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]

METHODS: dict[str, dict[str, str]] = {
    "ne": {
        "title": "NE-VAE: the re-encoding loss",
        "paper": "R. Tu, Y. Liu, Y. Xue, C. Wang, M. Guo. *Neighbor Embedding Variational Autoencoder*.",
        "entries": "`ne`",
    },
    "du": {
        "title": "DU-VAE and DU-IAF: diversity and uncertainty awareness",
        "paper": "D. Shen, C. Qin, C. Wang, H. Zhu, E. Chen, H. Xiong. *Regularizing Variational Autoencoder "
        "with Diversity and Uncertainty Awareness*.",
        "entries": "`du` (and `iaf`, the inverse autoregressive flow posterior: `du` + `iaf` is DU-IAF)",
    },
    "as": {
        "title": "VAE-AS: the auxiliary softmax multiclassifier",
        "paper": "Y. Li. *Improve Variational Autoencoder with Auxiliary Softmax Multiclassifier*.",
        "entries": '`as` (a Python keyword: give the entry an `id`, e.g. `id = "vae_as"`)',
    },
    "intel": {
        "title": "InteL-VAE: intermediary latent spaces",
        "paper": "N. Miao, E. Mathieu, N. Siddharth, Y. W. Teh, T. Rainforth. *On Incorporating Inductive "
        "Biases into VAEs*.",
        "entries": "`intel`",
    },
    "renyi": {
        "title": "Rényi bounds, IWAE and VR-max",
        "paper": "A. Pește et al. *An Explanatory Analysis of the Geometry of Latent Variables Learned by "
        "Variational Auto-Encoders*; Y. Li, R. E. Turner. *Rényi Divergence Variational Inference* "
        "(NeurIPS 2016); Y. Burda, R. Grosse, R. Salakhutdinov. *Importance Weighted Autoencoders* (ICLR 2016).",
        "entries": "`renyi`",
    },
    "baselines": {
        "title": "Baselines: aggressive inference-network training, mixture and VampPrior priors",
        "paper": "J. He, D. Spokoyny, G. Neubig, T. Berg-Kirkpatrick. *Lagging Inference Networks and Posterior "
        "Collapse in Variational Autoencoders* (ICLR 2019); J. M. Tomczak, M. Welling. *VAE with a VampPrior* "
        "(AISTATS 2018).",
        "entries": "`aggressive`, `mog_prior`, `vamp_prior`",
    },
    "text": {
        "title": "Text VAEs: LSTM networks, sentence corpora and the text protocol",
        "paper": "J. He, D. Spokoyny, G. Neubig, T. Berg-Kirkpatrick. *Lagging Inference Networks and Posterior "
        "Collapse in Variational Autoencoders* (ICLR 2019); S. R. Bowman et al. *Generating Sentences from a "
        "Continuous Space* (CoNLL 2016); DU-VAE tables 1-2 (text).",
        "entries": "`text` (components only: the `sentences`, `labelled` and `kjv` datasets, the `lstm` encoder "
        "and decoder, the `categorical` likelihood)",
    },
}

_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _rewrite_links(line: str, folder: str) -> str:
    def repl(match: re.Match[str]) -> str:
        bang, text, target = match.groups()
        if re.match(r"^(https?:|mailto:|#)", target):
            return match.group(0)
        path = f"plugins/{folder}/{target.lstrip('./')}" if not target.startswith("/") else target.lstrip("/")
        if bang:
            return f"*(figure in the repository: `{path}`)*"
        return f"{text} (`{path}`)" if text and text.strip("`") != path else f"`{path}`"

    return _LINK.sub(repl, line)


def method_page(folder: str, readme: Path | None) -> str:
    info = METHODS[folder]
    head = [
        f"# {info['title']}",
        "",
        f"- **Paper**: {info['paper']}",
        f"- **Plugin**: the distribution `vaecore-{folder}-plugin` (`plugins/{folder}/`); "
        f"stack entries {info['entries']}.",
        f"- **Install**: `pip install -c constraints.txt -e plugins/{folder}`",
        f"- **Tests**: `python -m pytest plugins/{folder}/tests -q` (or `nox -s \"plugins(plugin='{folder}')\"`)",
        "",
    ]
    if readme is None or not readme.is_file():
        return "\n".join([*head, f"The plugin's README (`plugins/{folder}/README.md`) is not written yet.", ""])
    head += [
        f"The rest of this page is the plugin's README (`plugins/{folder}/README.md`): what it does, its options,",
        "the choices made where the paper is silent, and the numbers measured with the commands that reproduce them.",
        "",
        "---",
        "",
    ]
    body, fenced = [], False
    for line in readme.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            if line.startswith("#"):
                line = "#" + line
            line = _rewrite_links(line, folder)
        body.append(line)
    return "\n".join([*head, *body]).rstrip() + "\n"


def on_files(files: Files, config: Any) -> Files:
    for folder in METHODS:
        content = method_page(folder, ROOT / "plugins" / folder / "README.md")
        files.append(File.generated(config, f"methods/{folder}.md", content=content))
    return files
