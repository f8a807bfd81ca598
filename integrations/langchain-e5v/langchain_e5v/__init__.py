"""E5-V multimodal embeddings for LangChain (``langchain-e5v``).

``E5VEmbeddings`` embeds documents, queries, images (``embed_image``) and composed image + text queries into one
space; ``add_images`` writes image documents into ``langchain-qdrant``'s ``QdrantVectorStore``.
"""

from langchain_e5v.embeddings import E5VEmbeddings
from langchain_e5v.qdrant import add_images

__all__ = ["E5VEmbeddings", "add_images"]
