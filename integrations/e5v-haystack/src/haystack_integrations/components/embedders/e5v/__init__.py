"""E5-V embedders for Haystack (``e5v-haystack``): texts, queries, images and PDF pages in one vector space.

``E5VTextEmbedder`` embeds a query string, ``E5VDocumentEmbedder`` Documents' text, ``E5VDocumentImageEmbedder`` the
image file or PDF page a Document names. All run ``e5v_qdrant.E5VEncoder``; equal options share one loaded model.
"""

from .document_embedder import E5VDocumentEmbedder
from .document_image_embedder import E5VDocumentImageEmbedder
from .text_embedder import E5VTextEmbedder

__all__ = ["E5VTextEmbedder", "E5VDocumentEmbedder", "E5VDocumentImageEmbedder"]
