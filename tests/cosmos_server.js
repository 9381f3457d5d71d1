// Starts the Cosmos DB protocol server (@vercel/cosmosdb-server) for tests and local runs.
// Usage: node tests/cosmos_server.js [port] [host] [--exit-with-stdin] [--advertise-port=N]
// (port 0 = any free port)
// Prints one JSON line {"ready": true, "endpoint": ...} once it listens. With --exit-with-stdin
// (what tests/cosmos_server.py passes) it exits when its stdin closes, so a crashed test run never
// leaves it behind; without it, it runs until SIGINT/SIGTERM (for `make run` in another shell).
"use strict";

// Work around a protocol-server bug before its routes are built: reading a document that does
// not exist crashes the handler (HTTP 500, "Cannot read properties of undefined") where Cosmos DB
// answers 404. The routes table picks up `default` when it loads, so patch the module first.
const readDocument = require("@vercel/cosmosdb-server/lib/handler/read-document");
const partitionHeader = require("@vercel/cosmosdb-server/lib/utils/get-partition-from-header");

const originalReadDocument = readDocument.default;
readDocument.default = (account, req, res, params) => {
  const collection = account.database(params.dbId).collection(params.collId);
  const header = partitionHeader.default(req);
  if (collection.read() && header !== undefined) {
    let partitionKey;
    try {
      partitionKey = partitionHeader.parsePartitionKey(header, params.docId);
    } catch {
      partitionKey = undefined;
    }
    if (partitionKey !== undefined && !collection.document(params.docId, partitionKey).read()) {
      res.statusCode = 404;
      return { code: "NotFound", message: "Entity with the specified id does not exist in the system." };
    }
  }
  return originalReadDocument(account, req, res, params);
};

// Another protocol-server bug: replacing a container (PUT /dbs/{db}/colls/{coll}, which changes
// its defaultTtl or indexing policy) makes a new, empty one, where Cosmos DB keeps the items. The
// replaced container keeps its _rid and _self, so its items move over as they are.
const replaceCollection = require("@vercel/cosmosdb-server/lib/handler/replace-collection");

const originalReplaceCollection = replaceCollection.default;
replaceCollection.default = async (account, req, res, params) => {
  const before = account.database(params.dbId).collection(params.collId);
  const result = await originalReplaceCollection(account, req, res, params);
  const after = account.database(params.dbId).collection(params.collId);
  if (before.read() && after.read() && after !== before) {
    for (const part of ["documents", "userDefinedFunctions", "partitionKeyRanges"]) {
      after[part] = before[part];
      after[part]._parent = after;
    }
  }
  return result;
};

const { createHttpsServer } = require("@vercel/cosmosdb-server");

const args = process.argv.slice(2).filter((arg) => !arg.startsWith("--"));
const exitWithStdin = process.argv.includes("--exit-with-stdin");
const port = Number.parseInt(args[0] || "0", 10);
const host = args[1] || "127.0.0.1";

// --advertise-port=N: the port the account's endpoints name (GET /, which the SDK then sends
// every request to), for a test that puts a TCP proxy in front of this server.
const advertised = process.argv.find((arg) => arg.startsWith("--advertise-port="));

const server = createHttpsServer({ keepAlive: true });
const listening = server.address.bind(server);
if (advertised) {
  server.address = () => ({ ...listening(), port: Number.parseInt(advertised.split("=")[1], 10) });
}
server.listen(port, host, () => {
  const address = listening();
  const endpoint = `https://${host}:${address.port}/`;
  process.stdout.write(`${JSON.stringify({ ready: true, endpoint, port: address.port })}\n`);
});

const stop = () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
if (exitWithStdin) {
  process.stdin.on("end", stop);
  process.stdin.resume();
}
