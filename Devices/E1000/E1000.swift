// E1000 device
