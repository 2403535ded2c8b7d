// Grafast reads GRAPHILE_ENV when it is first imported and runs in production mode unless told otherwise. Entry
// points import this module before anything from PostGraphile, so development gets Grafast's extra checks and
// readable errors while production stays lean. An explicit GRAPHILE_ENV wins.
process.env.GRAPHILE_ENV ??= process.env.NODE_ENV === "production" ? "production" : "development";
