print("normbench: not yet")
