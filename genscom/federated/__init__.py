"""Federated learning across users: the channel adapter trained by Flower clients, aggregated by a Flower strategy;
the graph multimodal adapter for heterogeneous encoders (:mod:`~genscom.federated.graph_adapter`) and error-aware
labelling (:mod:`~genscom.federated.labels`), run for heterogeneous users on Flower's Simulation Engine
(:mod:`~genscom.federated.engine`, data in :mod:`~genscom.federated.graph_data`).

Needs the ``[fed]`` extra (``flwr[simulation]``: flwr and ray); importing this package does not.
"""

from genscom.federated.adapter import (AdapterClient, FedConfig, FedUser, build_user_data, client_app, get_weights,
                                       make_client, make_strategy, parse_users, run_federated, set_weights)
from genscom.federated.engine import GraphFedConfig, GraphFedResult, quick_graph_config, run_graph_federated
from genscom.federated.graph_adapter import (GraphAdapterConfig, GraphMultimodalAdapter, aggregate, build_graph,
                                             build_graph_adapter, graph_adapter_loss)
from genscom.federated.labels import (ConfidenceStats, ConfidenceTracker, LabelNoise, confident_mask,
                                      detection_scores, global_threshold, inject_label_noise, merge_stats,
                                      pair_confidence)

__all__ = ["AdapterClient", "ConfidenceStats", "ConfidenceTracker", "FedConfig", "FedUser", "GraphAdapterConfig",
           "GraphFedConfig", "GraphFedResult", "GraphMultimodalAdapter", "LabelNoise", "aggregate", "build_graph",
           "build_graph_adapter", "build_user_data", "client_app", "confident_mask", "detection_scores", "get_weights",
           "global_threshold",
           "graph_adapter_loss", "inject_label_noise", "make_client", "make_strategy", "merge_stats",
           "pair_confidence", "parse_users", "quick_graph_config", "run_federated", "run_graph_federated",
           "set_weights"]
