"""The Ray Serve application: typed builder args, the resource guard and the app builder."""
