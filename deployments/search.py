"""SearchIndex: persistent vector indexes on Milvus (Milvus Lite file by default, or a server URI).

Every call names the tenant whose namespace it touches; the gateway fills it from the caller's
key, so one tenant never addresses another's collections. Calls run in worker threads.
"""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
from ray import serve

from models.search import Item, VectorStore


def _plain(obj) -> dict:
    return dataclasses.asdict(obj)


@serve.deployment(name="SearchIndex", max_ongoing_requests=32)
class SearchIndex:
    def __init__(self, uri: str, token: str = "") -> None:
        self.store = VectorStore(uri=uri, token=token)  # a Lite file's folder is created if missing

    async def create(self, tenant: str, name: str, *, encoder: str, space: str, dim: int) -> dict:
        return _plain(
            await asyncio.to_thread(self.store.create, tenant, name, encoder=encoder, space=space, dim=dim)
        )

    async def list(self, tenant: str) -> list[dict]:
        return [_plain(i) for i in await asyncio.to_thread(self.store.list, tenant)]

    async def describe(self, tenant: str, name: str) -> dict:
        return _plain(await asyncio.to_thread(self.store.describe, tenant, name))

    async def drop(self, tenant: str, name: str) -> None:
        await asyncio.to_thread(self.store.drop, tenant, name)

    async def has(self, tenant: str, name: str, ids: list[str]) -> set[str]:
        return await asyncio.to_thread(self.store.has, tenant, name, ids)

    async def add(self, tenant: str, name: str, rows: list[tuple[str, np.ndarray, dict]], *, encoder: str):
        items = [Item(id=i, vector=v, metadata=m) for i, v, m in rows]
        return await asyncio.to_thread(self.store.add, tenant, name, items, encoder=encoder)

    async def search(
        self, tenant: str, name: str, vector: np.ndarray, *, space: str, top_k: int, where: dict
    ) -> list[dict]:
        hits = await asyncio.to_thread(
            self.store.search, tenant, name, vector, space=space, top_k=top_k, where=where
        )
        return [_plain(h) for h in hits]

    async def delete(self, tenant: str, name: str, ids: list[str]) -> int:
        return await asyncio.to_thread(self.store.delete, tenant, name, ids)

    def ping(self) -> str:
        return "ok"
