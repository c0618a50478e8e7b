"""Installs metasearch.

`plugins/` and `search_spaces/` are shipped as `metasearch.plugins` and
`metasearch.search_spaces` so that installing never claims those generic
top-level names. Built-in plugins, search spaces and data sets register
through the same entry-point groups a third-party package uses.
"""

from setuptools import setup

setup(
    name="metasearch",
    version="0.1.0",
    description="Architecture and metric search for few-shot learners, with meta-learners as plugins.",
    python_requires=">=3.10",
    packages=[
        "metasearch",
        "metasearch.data",
        "metasearch.strategies",
        "metasearch.plugins",
        "metasearch.search_spaces",
    ],
    package_dir={
        "metasearch": "metasearch",
        "metasearch.plugins": "plugins",
        "metasearch.search_spaces": "search_spaces",
    },
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3",
        # metasearch.kt_adapter relies on keras-tuner internals checked against these
        # releases (tests/test_kt_adapter.py); the extra brings what --strategy=bayesian needs.
        "keras-tuner[bayesian]>=1.4.7,<1.4.9",
        # The [tf] extra brings tf-keras, without which tfp.distributions will not load on TF.
        "tensorflow-probability[tf]>=0.24",
        "absl-py>=1.0",
        "numpy",
        "pillow",
        "matplotlib>=3.5",  # cell pictures and search-progress plots (no system graphviz)
        "tensorboard>=2.16",  # trial curves and the HParams record (metasearch.summaries)
        "grpcio",  # distributed search: the chief serves keras-tuner's oracle over gRPC
    ],
    extras_require={
        "test": [
            # pytest 9.2 keeps node ids in a new field, so xdist's --dist=loadgroup silently
            # stops grouping (pytest-dev/pytest-xdist#1386) and module fixtures run twice.
            "pytest>=7,<9.2",
            "pytest-xdist>=3",
            "ruff>=0.5",
        ],
        # benchmarks/peers: the PyTorch peer of benchmarks/throughput.py --peers. Never a
        # dependency of metasearch; better kept in a separate environment (see its README).
        "peers": ["torch"],
    },
    entry_points={
        "console_scripts": ["metasearch = metasearch.cli:run"],
        "metasearch.plugins": [
            "protonet = metasearch.plugins.protonet:PrototypicalNetworks",
            "matching = metasearch.plugins.matching:MatchingNetworks",
            "maml = metasearch.plugins.maml:MAML",
            "fomaml = metasearch.plugins.maml:FOMAML",
            "metasgd = metasearch.plugins.maml:MetaSGD",
            "anil = metasearch.plugins.maml:ANIL",
            "versa = metasearch.plugins.versa:Versa",
            "neural_statistician = metasearch.plugins.neural_statistician:NeuralStatistician",
            "meta_critic = metasearch.plugins.meta_critic:MetaCritic",
            "learned_optimizer = metasearch.plugins.learned_optimizer:LearnedOptimizerLearner",
        ],
        "metasearch.search_spaces": [
            "conv_blocks = metasearch.search_spaces.conv_blocks:ConvBlocks",
            "nasnet = metasearch.search_spaces.nasnet:NASNet",
            "fabric = metasearch.search_spaces.fabric:NeuralFabric",
            "nasbench201 = metasearch.search_spaces.nasbench201:NASBench201",
            "mlp = metasearch.search_spaces.mlp:MLP",
        ],
        "metasearch.datasets": [
            "glyphs = metasearch.data.glyphs:Glyphs",
            "omniglot = metasearch.data.omniglot:Omniglot",
            "sinusoid = metasearch.data.sinusoid:Sinusoid",
            "image_folder = metasearch.data.image_folder:ImageFolder",
            "mini_imagenet = metasearch.data.mini_imagenet:MiniImageNet",
            "cub = metasearch.data.cub:CUB",
            "meta_album = metasearch.data.meta_album:MetaAlbum",
            "colour_shapes = metasearch.data.shapes:ColourShapes",
        ],
        "metasearch.strategies": [
            "random = metasearch.strategies.random_search:RandomOracle",
            "grid = metasearch.strategies.grid_search:GridOracle",
            "bayesian = metasearch.strategies.bayesian:BayesianOracle",
            "hyperband = metasearch.strategies.hyperband:HyperbandOracle",
            "evolution = metasearch.strategies.evolution:EvolutionOracle",
            "controller = metasearch.strategies.controller:ControllerOracle",
        ],
    },
)
