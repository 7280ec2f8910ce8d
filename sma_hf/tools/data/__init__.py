"""`sma-prepare-data`: reproducible local parquet corpora built from files that Python and Debian packages ship, one
module per corpus, each writing one folder under the output root with its splits and a data card:

- `chemistry`: a SMILES pretraining pool, FreeSolv and solubility;
- `peptides`: a modlAMP pretraining pool and AMP vs UniProt;
- `proteins`: a SwissProt pretraining pool, subcellular localisation (random and 30%-identity cluster splits) and
  toxicity (Debian's metastudent-data, predictnls, ncbi-blast+ and mmseqs2; PyPI's toxinpred2);
- `images`: MNIST 5000 and 8x8 digits as pixel sequences, optionally permuted;
- `tabular`: breast cancer;
- `physics`: HIGGS-like collision events simulated with Pythia 8 and FastJet (`pip install "sma_hf[physics]"`),
  asked for by name.

`corpus` holds what they share (sources, splits, shards, data cards), `prepare` the command line. The optional
packages (`pip install "sma_hf[data]"`) are imported only inside the functions that need them; no other module of
`sma_hf` imports this package. The fine-tuning task specs over these files ship in `sma_hf/tools/tasks/`.
"""

from .chemistry import prepare_chemistry
from .images import prepare_images
from .peptides import prepare_peptides
from .physics import prepare_physics
from .prepare import CORPORA, main
from .proteins import prepare_proteins
from .tabular import prepare_tabular


__all__ = [
    "CORPORA",
    "main",
    "prepare_chemistry",
    "prepare_images",
    "prepare_peptides",
    "prepare_physics",
    "prepare_proteins",
    "prepare_tabular",
]
