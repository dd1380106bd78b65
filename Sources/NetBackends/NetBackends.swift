// NetBackends: being written.
