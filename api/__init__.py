"""HTTP only: the app factory, auth, routes and the mapping between HTTP and the queue contract."""
