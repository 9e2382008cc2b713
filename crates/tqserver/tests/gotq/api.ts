// The Go TQServer's kind of Bun worker: an Express API on $PORT, written
// for a server that strips the route prefix (it serves /items, reached as
// /api/items).
import express from "express";

const app = express();
const port = parseInt(process.env.PORT || "3000");

app.get("/health", (_req, res) => res.json({ status: "ok" }));
app.get("/items", (_req, res) => res.json([{ id: "1", name: "Item 1" }]));
app.get("/env", (req, res) =>
  res.json({
    path: req.url,
    prefix: req.get("x-forwarded-prefix") ?? null,
    WORKER_PORT: process.env.WORKER_PORT,
    WORKER_NAME: process.env.WORKER_NAME,
    WORKER_PATH: process.env.WORKER_PATH,
    WORKER_TYPE: process.env.WORKER_TYPE,
    WORKER_MODE: process.env.WORKER_MODE,
    GREETING: process.env.GREETING,
    GOMAXPROCS: process.env.GOMAXPROCS ?? null,
    WORKER_READ_TIMEOUT_SECONDS: process.env.WORKER_READ_TIMEOUT_SECONDS,
    ALL_PROXY: process.env.ALL_PROXY,
    TQSERVER_WORKER_UA: process.env.TQSERVER_WORKER_UA,
  }),
);

app.listen(port, "127.0.0.1", () => console.log(`api worker on ${port}`));
