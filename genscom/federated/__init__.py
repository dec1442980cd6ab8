"""Federated learning across users: the channel adapter trained by Flower clients, aggregated by a Flower strategy.

Needs the ``[fed]`` extra (``flwr``); importing this package does not.
"""

from genscom.federated.adapter import (AdapterClient, FedConfig, FedUser, build_user_data, client_app, get_weights,
                                       make_client, make_strategy, parse_users, run_federated, set_weights)

__all__ = ["AdapterClient", "FedConfig", "FedUser", "build_user_data", "client_app", "get_weights", "make_client",
           "make_strategy", "parse_users", "run_federated", "set_weights"]
