"""adaptation"""
