"""Shared semantic memory: a knowledge base both ends hold, so known content is sent as an index."""

from genscom.memory.knowledge_base import KnowledgeBase, KnowledgeBaseSyncError, build_knowledge_base

__all__ = ["KnowledgeBase", "KnowledgeBaseSyncError", "build_knowledge_base"]
